"""Matrix ports: the appservice client API (as_token, masquerading) and the E2EE bot."""
