"""`rnnmnist serve`: the web page and its JSON API."""
