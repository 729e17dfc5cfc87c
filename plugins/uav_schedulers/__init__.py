"""Built-in uav plugin package (uav_schedulers)."""
