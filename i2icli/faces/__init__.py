"""Finding faces, aligning them to the restoration template, and pasting restored faces back."""
