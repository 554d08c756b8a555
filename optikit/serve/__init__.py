"""Online comparison: serve a variant in shadow, canary or A/B beside the original, log both models' answers, and
turn the log into the same comparison `optikit bench` makes offline."""
