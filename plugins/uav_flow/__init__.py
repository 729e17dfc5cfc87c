"""Built-in uav plugin package (uav_flow)."""
