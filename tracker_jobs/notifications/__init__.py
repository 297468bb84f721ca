"""Notifications: the tables of rules and of what was sent, and the webhook delivery job (rules, mail
and the outbox come with the notifications issue)."""
