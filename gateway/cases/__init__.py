"""Requests tracked to a result: their due days (deadlines) and the views of them."""
