"""What the car is: the config file and the vehicle's DBCs resolved into the core's objects (reads files)."""
