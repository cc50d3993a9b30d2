"""The API's routes, one module per resource, each an `APIRouter` of module-level routes."""
