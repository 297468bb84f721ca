"""The building blocks of the admin API that every domain's views use: app keys, the caller and its
access, request parameters, JSON answers and errors, routes, rate limits and the OpenAPI description."""
