"""One module per command; each defines a click command that parses options and calls the library."""
