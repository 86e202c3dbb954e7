"""Neural-network building blocks for dtp_bench."""
