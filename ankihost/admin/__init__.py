"""Administration: who owns SYNC_BASE (`lock`), the running server's admin channel (`channel`),
and the table of admin operations both the command line and the server run (`operations`)."""
