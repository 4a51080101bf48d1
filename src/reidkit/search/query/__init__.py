"""Query: person search over a gallery, match-rule calibration, clustering into albums, reports."""
