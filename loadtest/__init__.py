"""Load tests (Locust) and the capacity benchmark for a served BEiT."""
