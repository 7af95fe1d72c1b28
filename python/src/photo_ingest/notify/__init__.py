"""Notifications: what a person needs to know when a card session ends or a backlog stalls."""
