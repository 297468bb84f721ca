"""The admin app (port 8000): the app factory that collects every domain's routes, the authentication
middleware, the websocket hub, /health and /metrics."""
