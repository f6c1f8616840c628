"""Fleet management for staff: the vehicles' records, bulk changes, images and MQTT logins."""
