"""The job service behind ``vidshard serve``: settings, the persistent job store, input
checks and (imported only by the server) the HTTP application."""
