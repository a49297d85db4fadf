"""Accounts: who may sync, how they log in, which host key belongs to whom, what they did.

`directory.AccountDirectory` is what the server asks: it answers from the environment
(`env`, SYNC_USERn with the official derived host keys) and from an account store (`store`
says what one does; `sqlite` is the default), and keeps the audit trail (`audit`).
`passwords` verifies and makes hashes; `throttle` slows and refuses repeated failed logins.
"""
