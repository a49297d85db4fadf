"""Built-in HTTPS: the server's TLS context from PEM files, and its renewal without restart."""
