import sys, glob, xml.etree.ElementTree as ET
for f in sorted(glob.glob(sys.argv[1] + '/mi_*.xml')):
    r = ET.parse(f).getroot()
    row = []
    for h in r.findall('heap'):
        cur = int([s for s in h.findall('system') if s.get('type') == 'current'][0].get('size'))
        free = sum(int(t.get('size')) for t in h.findall('total') if t.get('type') in ('fast', 'rest'))
        big = max([int(s.get('to')) for s in h.find('sizes').findall('size') if int(s.get('count')) > 0] or [0])
        row.append(f"{h.get('nr')}:{cur/2**20:.0f}/{free/2**20:.0f}f/{big/2**20:.1f}")
    mm = [t for t in r.findall('total') if t.get('type') == 'mmap'][0]
    print(f.split('/')[-1], ' '.join(row), 'mmap', mm.get('count'), int(mm.get('size')) // 2**20)
