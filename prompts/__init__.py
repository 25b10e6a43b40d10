"""Prompt templates as versioned data files (read by agents.prompting); a package so they ship in the wheel."""
