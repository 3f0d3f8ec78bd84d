"""agritrace."""
