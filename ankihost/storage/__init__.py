"""Everything that touches a user's files: paths, the collection's SQLite file, its schema."""
