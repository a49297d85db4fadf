"""TLS for ankihost: serving HTTPS itself, and making a private CA for it."""
