from infrastructure.templates.engine import JinjaTemplateEngine
from infrastructure.templates.renderer import JinjaTemplateRenderer

__all__ = ["JinjaTemplateEngine", "JinjaTemplateRenderer"]
