"""Notifications: who to tell (config), what to say (message), and sending through Apprise."""
