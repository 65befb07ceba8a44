"""The outside world: Open311 endpoint URLs, DNS records and service discovery documents."""
