"""`pss review`: a local page to look at a run's pairs side by side and label them for `pss train-matcher`."""
