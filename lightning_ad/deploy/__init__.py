"""A logged detector put to use: registered (``registry``), scoring image files (``predict``)
and served over HTTP (``serving``)."""
