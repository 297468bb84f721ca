"""The aiohttp apps: the admin API (port 8000) and the device listener (port 5055)."""
