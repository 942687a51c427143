"""The officers' web client as built from web/ (``make`` runs npm and esbuild): the files
in static/ are what gateway.channels.webapp serves at ``/app/``. Nothing here runs."""
