"""End-to-end tests: the installed ``recon`` console script run as a user runs it."""
