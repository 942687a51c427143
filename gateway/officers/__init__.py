"""Officers and desks on the home gateway: the desk directory and bindings, enrollment,
sessions, delivery to desks and the live-update hub."""
