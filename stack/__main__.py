import sys

from stack.service import main

sys.exit(main())
