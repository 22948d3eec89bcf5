"""tlsrelay: a TLS-only SMTP relay for hosting providers."""

__version__ = "0.1.0"
