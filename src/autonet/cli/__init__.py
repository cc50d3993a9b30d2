"""The command line (`autonet`): lab, apply/get/delete/..., exec, demo, and the daemons."""
