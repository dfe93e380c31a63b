"""``eval``: top-1/top-5 of every backend x precision on a user's labelled folder."""
