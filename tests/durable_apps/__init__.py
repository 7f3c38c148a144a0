"""Small apps and scripts that the durable-delivery tests run as real processes."""
