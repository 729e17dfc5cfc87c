"""OpenTimelineIO integration for uav."""
