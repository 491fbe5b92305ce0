"""Providers: the only code that talks to the outside world to deliver a message. They are called with no
row lock held and no transaction open (claim, commit, send, record), and answer every message with a
SendResult; they never touch the database."""
