"""`python -m routing.fake_upstream --port 9100`: run the fake upstream without Django."""

from routing.fake_upstream.server import main

if __name__ == "__main__":
    main()
