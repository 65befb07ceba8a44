"""The aiohttp API."""
