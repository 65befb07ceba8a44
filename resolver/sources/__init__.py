"""Facts fetched for the core: DNS, discovery documents, a DNS registry zone."""
