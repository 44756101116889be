"""modelport services: each subpackage is one BentoML service and its model runtime."""
