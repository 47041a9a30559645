"""Every rule of the product lives here, once. No Reflex, no FastAPI."""
