"""The dashboard (`lmdev ui`): a read-only JSON API over the run store and a single-page
interface served from ``static/``. ``lmdev.ui.server.create_app`` builds the app."""
