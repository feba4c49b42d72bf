"""The hardware configuration (aihwkit's shape plus mapping and converter), its presets, and its text form."""
