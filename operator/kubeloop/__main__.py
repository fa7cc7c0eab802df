import sys

from kubeloop.cli import main

sys.exit(main())
