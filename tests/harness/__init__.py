"""Test harness: real daemons as subprocesses on 127.0.0.1 ephemeral ports."""
