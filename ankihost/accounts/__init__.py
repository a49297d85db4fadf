"""Accounts: who may sync, how they log in, and which host key belongs to whom.

`source.AccountSource` is what the server asks; `env.EnvAccounts` answers it from
SYNC_USER1..N, with the official server's derived host keys; `passwords` verifies PHC hashes.
"""
