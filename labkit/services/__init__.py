"""The daemons of a lab, one module each, on one lifecycle (:mod:`labkit.services.base`)."""
