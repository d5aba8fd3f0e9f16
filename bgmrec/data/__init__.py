"""The dataset contract, weak/strong splits and the simulator."""
