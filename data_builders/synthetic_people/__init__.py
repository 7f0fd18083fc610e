"""synthetic_people builder (see synthetic_people.py)."""
