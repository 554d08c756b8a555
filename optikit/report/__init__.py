"""Reports: results rendered for people (HTML, Markdown) and for terminals."""
